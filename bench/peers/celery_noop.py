# The Python side of the Celery benchmark (bench/scenarios/celery.ts): Celery 5 at its defaults
# (prefork pool, prefetch multiplier 4, early acknowledgement), one no-op task keeping its result.
import os

from celery import Celery

app = Celery('celery_noop', broker=os.environ['REDIS_URL'], backend=os.environ['REDIS_URL'])


@app.task(name='bench.noop')
def noop(i):
    return i

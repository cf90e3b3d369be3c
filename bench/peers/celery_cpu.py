# The Python side of the isolation benchmark (bench/scenarios/isolation.ts): Celery 5 at its defaults
# (prefork pool, prefetch multiplier 4, early acknowledgement), the same PBKDF2-SHA256 work per run as
# the Node peers, keeping its result.
import hashlib
import os

from celery import Celery

app = Celery('celery_cpu', broker=os.environ['REDIS_URL'], backend=os.environ['REDIS_URL'])


@app.task(name='bench.pbkdf2')
def pbkdf2(i, iterations):
    if iterations > 0:
        hashlib.pbkdf2_hmac('sha256', b'password', ('salt%d' % i).encode(), iterations, 32)
    return i

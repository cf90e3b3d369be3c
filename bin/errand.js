#!/usr/bin/env node
// Errand's command line. Needs Node.js 24 or newer (it runs the TypeScript sources directly).
import { requireNode } from './node-version.js';

requireNode('errand');
await import('../src/cli/main.ts');

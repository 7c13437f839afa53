// holdup.v1.Lab through @grpc/grpc-js whose channel compresses every call with gzip
// (grpc.default_compression_algorithm = 2), as Node services are often configured.
// Issue 11: holdup refused gzip with UNIMPLEMENTED and announced its encodings only in
// trailers, so such a channel never recovered and every call failed.
//
// Starts the real binary (HOLDUP_BIN, default target/debug/holdup) on a free loopback port.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';

import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '..', '..');
const holdupBin = process.env.HOLDUP_BIN ?? join(repo, 'target', 'debug', 'holdup');
const GZIP = 2;
const CALL_TIMEOUT_MS = 10_000;

let server;
let address;

before(async () => {
  server = spawn(
    holdupBin,
    ['serve', '--listen', '127.0.0.1:0', '--no-console', '--no-metrics', '--seed-rows', '100'],
    { env: { ...process.env, OTEL_TRACES_EXPORTER: 'none', NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const lines = createInterface({ input: server.stdout });
  const ready = new Promise((resolveReady, rejectReady) => {
    const timer = setTimeout(() => rejectReady(new Error('holdup did not start within 60 s')), 60_000);
    lines.on('line', (line) => {
      const match = /^holdup listening on (\S+) /.exec(line);
      if (match) {
        clearTimeout(timer);
        resolveReady(match[1]);
      }
    });
    server.on('exit', (code) => rejectReady(new Error(`holdup exited with ${code} before it was ready`)));
  });
  address = await ready;
});

after(async () => {
  if (server && server.exitCode === null) {
    server.kill('SIGTERM');
    await once(server, 'exit');
  }
});

function labClient(options) {
  const definition = protoLoader.loadSync('holdup/v1/lab.proto', {
    includeDirs: [join(repo, 'proto')],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
  });
  const { Lab } = grpc.loadPackageDefinition(definition).holdup.v1;
  return new Lab(address, grpc.credentials.createInsecure(), options);
}

function call(client, method, request) {
  return new Promise((resolveCall, rejectCall) => {
    const deadline = new Date(Date.now() + CALL_TIMEOUT_MS);
    client[method](request, { deadline }, (error, reply) => (error ? rejectCall(error) : resolveCall(reply)));
  });
}

test('a channel that gzips every call is served, call after call', async () => {
  const client = labClient({ 'grpc.default_compression_algorithm': GZIP });
  try {
    const message = 'compress me '.repeat(80);
    for (let i = 0; i < 3; i += 1) {
      const reply = await call(client, 'Fast', { message });
      assert.equal(reply.message, message);
      assert.ok(reply.diagnostics, 'every reply carries diagnostics');
    }
    const sleep = await call(client, 'Sleep', { mode: 'ASYNC', duration_ms: 5 });
    assert.equal(sleep.mode, 'ASYNC');
  } finally {
    client.close();
  }
});

test('bad input still gets INVALID_ARGUMENT naming the field, compressed or not', async () => {
  const client = labClient({ 'grpc.default_compression_algorithm': GZIP });
  try {
    await assert.rejects(call(client, 'Sleep', { mode: 'ASYNC', duration_ms: 10_000_000 }), (error) => {
      assert.equal(error.code, grpc.status.INVALID_ARGUMENT);
      assert.match(error.details, /duration_ms/);
      return true;
    });
  } finally {
    client.close();
  }
});

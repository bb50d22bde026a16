// node dist/main.js <nest_emit|nest_send|kafkajs>
//
// BENCH_WORKERS=1: this process serves HTTP. BENCH_WORKERS=2: this process is a node:cluster
// primary that forks two workers sharing the port (each with its own producer), tells them to
// listen once both are connected, and restarts nothing. nest_send also runs the replier
// (`main.js replier`) as a child process of this one, started and ready before any HTTP.
import './production';
import { ChildProcess, fork } from 'node:child_process';
import cluster, { Worker } from 'node:cluster';
import { NestExpressApplication } from '@nestjs/platform-express';
import { ensureTopic, startAtEnd } from './admin';
import { createApp, listen, stopOnSignals } from './http';
import { KafkajsModule } from './kafkajs-peer';
import { NestEmitModule } from './nest-emit';
import { CLIENT_POSTFIX, NestSendModule, replyTopic, uniqueGroupId } from './nest-send';
import { runReplier } from './replier';
import { loadSettings, Settings } from './settings';

const MODES = ['nest_emit', 'nest_send', 'kafkajs'] as const;
type Mode = (typeof MODES)[number];

const READY_TIMEOUT_MS = 60_000;
// The grace of one process to stop, and the primary's before it kills what is left (the
// harness waits 15 s).
const STOP_GRACE_MS = 8_000;
const STOP_TIMEOUT_MS = 9_000;

type Control = { type: 'connected' } | { type: 'listen' } | { type: 'ready' };

function isControl(message: unknown, type: Control['type']): boolean {
  return typeof message === 'object' && message !== null && (message as { type?: unknown }).type === type;
}

async function buildApp(mode: Mode, settings: Settings): Promise<NestExpressApplication> {
  switch (mode) {
    case 'nest_emit':
      return createApp(NestEmitModule.forRoot(settings));
    case 'kafkajs':
      return createApp(KafkajsModule.forRoot(settings));
    case 'nest_send': {
      const groupId = uniqueGroupId();
      await startAtEnd(settings.brokers, groupId + CLIENT_POSTFIX, replyTopic(settings.topic));
      return createApp(NestSendModule.forRoot(settings, groupId));
    }
  }
}

function waitForMessage(type: Control['type']): Promise<void> {
  return new Promise((resolve) => {
    const onMessage = (message: unknown): void => {
      if (isControl(message, type)) {
        process.off('message', onMessage);
        resolve();
      }
    };
    process.on('message', onMessage);
  });
}

// One HTTP server: connect (app.init runs the onModuleInit hooks and async providers), then
// listen; under the cluster, listen only when the primary says that every worker is connected.
async function serveHttp(mode: Mode, settings: Settings, alongside?: () => Promise<void>): Promise<void> {
  const app = await buildApp(mode, settings);
  stopOnSignals(app, STOP_GRACE_MS, alongside);
  await app.init();
  if (cluster.isWorker) {
    const goAhead = waitForMessage('listen');
    process.send?.({ type: 'connected' });
    await goAhead;
  }
  await listen(app, settings);
}

function exited(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      resolve();
    } else {
      child.once('exit', () => resolve());
    }
  });
}

async function stopChild(child: ChildProcess, timeoutMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return;
  }
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  await exited(child);
  clearTimeout(timer);
}

async function startReplier(): Promise<ChildProcess> {
  const child = fork(process.argv[1], ['replier'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('replier not ready in time')), READY_TIMEOUT_MS);
    child.on('message', (message: unknown) => {
      if (isControl(message, 'ready')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`replier exited (${signal ?? code}) before it was ready`));
    });
  });
  child.on('exit', (code, signal) => {
    // It exits 0 only when told to stop.
    if (code !== 0) {
      process.stderr.write(`replier exited (${signal ?? code})\n`);
    }
  });
  return child;
}

function runPrimary(settings: Settings, replier: ChildProcess | undefined): void {
  const workers: Worker[] = [];
  let connected = 0;
  let stopping = false;
  let failed = false;

  // Workers and replier stop side by side; each is killed if it outlasts STOP_TIMEOUT_MS.
  const stopAll = async (code: number): Promise<void> => {
    await Promise.all([
      ...workers.map((worker) => stopChild(worker.process, STOP_TIMEOUT_MS)),
      replier ? stopChild(replier, STOP_TIMEOUT_MS) : undefined,
    ]);
    process.exit(code);
  };

  const onSignal = (): void => {
    if (!stopping) {
      stopping = true;
      void stopAll(failed ? 1 : 0);
    }
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);

  for (let i = 0; i < settings.workers; i++) {
    const worker = cluster.fork();
    workers.push(worker);
    worker.on('message', (message: unknown) => {
      if (isControl(message, 'connected') && ++connected === settings.workers) {
        for (const w of workers) {
          w.send({ type: 'listen' });
        }
      }
    });
    worker.on('exit', (code, signal) => {
      if (code !== 0) {
        failed = true;
      }
      if (stopping) {
        return;
      }
      // Nothing is restarted: a worker that dies is reported; the primary ends with the last.
      process.stderr.write(`worker ${worker.process.pid} exited (${signal ?? code})\n`);
      if (workers.every((w) => w.isDead())) {
        stopping = true;
        void stopAll(1);
      }
    });
  }
}

async function main(): Promise<void> {
  const mode = process.argv[2];
  const settings = loadSettings();
  if (mode === 'replier') {
    await runReplier(settings);
    return;
  }
  if (!MODES.includes(mode as Mode)) {
    throw new Error(`usage: main.js <${MODES.join('|')}>`);
  }
  const peer = mode as Mode;
  if (cluster.isWorker) {
    await serveHttp(peer, settings);
    return;
  }
  let replier: ChildProcess | undefined;
  if (peer === 'nest_send') {
    await ensureTopic(settings.brokers, replyTopic(settings.topic));
    replier = await startReplier();
  }
  if (settings.workers === 1) {
    const stopReplier = replier ? () => stopChild(replier, STOP_TIMEOUT_MS) : undefined;
    try {
      await serveHttp(peer, settings, stopReplier);
    } catch (err) {
      await stopReplier?.();
      throw err;
    }
  } else {
    runPrimary(settings, replier);
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});

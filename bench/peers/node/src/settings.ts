// Settings of every peer, from the environment (the same variables as the Python peers).
import { logLevel, Partitioners, ProducerConfig } from 'kafkajs';

export type Acks = 0 | 1 | -1;

export interface Settings {
  brokers: string[];
  topic: string;
  acks: Acks;
  host: string;
  port: number;
  workers: 1 | 2;
}

function parseAcks(raw: string): Acks {
  switch (raw) {
    case '0':
      return 0;
    case '1':
      return 1;
    case 'all':
    case '-1':
      return -1;
    default:
      throw new Error(`BENCH_ACKS must be "0", "1" or "all", not ${JSON.stringify(raw)}`);
  }
}

export function loadSettings(env: NodeJS.ProcessEnv = process.env): Settings {
  const brokers = (env.BENCH_BOOTSTRAP_SERVERS ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  const topic = env.BENCH_TOPIC ?? '';
  if (brokers.length === 0 || topic.length === 0) {
    throw new Error('set BENCH_BOOTSTRAP_SERVERS and BENCH_TOPIC');
  }
  const port = Number(env.BENCH_PORT ?? '8000');
  if (!Number.isInteger(port) || port <= 0 || port > 65535) {
    throw new Error(`BENCH_PORT must be a TCP port, not ${JSON.stringify(env.BENCH_PORT)}`);
  }
  const workers = env.BENCH_WORKERS ?? '1';
  if (workers !== '1' && workers !== '2') {
    throw new Error(`BENCH_WORKERS must be 1 or 2, not ${JSON.stringify(workers)}`);
  }
  return {
    brokers,
    topic,
    acks: parseAcks(env.BENCH_ACKS ?? 'all'),
    host: env.BENCH_HOST || '127.0.0.1',
    port,
    workers: workers === '2' ? 2 : 1,
  };
}

// kafkajs logs at WARN and above only: nothing per request.
export const KAFKA_LOG_LEVEL = logLevel.WARN;

// acks=all: the idempotent producer (kafkajs requires acks -1 for it); acks 0 or 1: not
// idempotent. The Java client's partitioner (murmur2 of the key), kafkajs 2's default, named
// so that kafkajs does not warn about the change of default at every start.
export function producerConfig(settings: Settings): ProducerConfig {
  // kafkajs' defaults otherwise (maxInFlightRequests unlimited, retries MAX_SAFE_INTEGER when
  // idempotent): the seed sets nothing else.
  return {
    idempotent: settings.acks === -1,
    allowAutoTopicCreation: false,
    createPartitioner: Partitioners.DefaultPartitioner,
  };
}

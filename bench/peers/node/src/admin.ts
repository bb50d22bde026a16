// The kafkajs admin steps of the request-reply peer: its reply topic and where new consumer
// groups start.
import { Kafka } from 'kafkajs';
import { KAFKA_LOG_LEVEL } from './settings';

async function withAdmin<T>(brokers: string[], work: (admin: ReturnType<Kafka['admin']>) => Promise<T>): Promise<T> {
  const kafka = new Kafka({ clientId: 'bench-nest-admin', brokers, logLevel: KAFKA_LOG_LEVEL });
  const admin = kafka.admin();
  await admin.connect();
  try {
    return await work(admin);
  } finally {
    await admin.disconnect();
  }
}

// Create `topic` with one partition unless it exists (the broker's default replication).
export async function ensureTopic(brokers: string[], topic: string): Promise<void> {
  await withAdmin(brokers, async (admin) => {
    const existing = await admin.listTopics();
    if (!existing.includes(topic)) {
      // false when another process created it first: fine too.
      await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true });
    }
  });
}

// Commit the end of `topic` for a consumer group that has not joined yet, so that it reads
// every record written from now on and nothing older. Without a committed offset a kafkajs
// consumer resolves "latest" only at its first fetch, after it has joined: a record written
// between the join and that fetch would never be read, and its request never answered.
//
// What kafkajs' admin.setOffsets does (a member joins, seeks, which commits, and leaves once a
// fetch has run), with a short fetch wait: setOffsets' own consumer long-polls its first
// fetch for kafkajs' default 5 s.
export async function startAtEnd(brokers: string[], groupId: string, topic: string): Promise<void> {
  const kafka = new Kafka({ clientId: 'bench-nest-admin', brokers, logLevel: KAFKA_LOG_LEVEL });
  const ends = await withAdmin(brokers, async (admin) => {
    if (!(await admin.listTopics()).includes(topic)) {
      throw new Error(`topic ${topic} does not exist (the peers create none but their reply topic)`);
    }
    return admin.fetchTopicOffsets(topic);
  });
  const consumer = kafka.consumer({ groupId, maxWaitTimeInMs: 100 });
  await consumer.connect();
  try {
    await consumer.subscribe({ topics: [topic] });
    const fetched = new Promise<void>((resolve) => {
      let fetches = 0;
      // A seek is applied (and committed) at the start of a fetch; the first fetch may have
      // begun before the seeks below, the second cannot have.
      consumer.on(consumer.events.FETCH, () => {
        if (++fetches === 2) {
          resolve();
        }
      });
    });
    await consumer.run({ eachBatchAutoResolve: false, eachBatch: async () => undefined });
    consumer.pause([{ topic }]);
    for (const { partition, high } of ends) {
      consumer.seek({ topic, partition, offset: high });
    }
    await fetched;
  } finally {
    await consumer.disconnect();
  }
  const committed = await withAdmin(brokers, (admin) => admin.fetchOffsets({ groupId, topics: [topic] }));
  const want = new Map(ends.map(({ partition, high }) => [partition, high]));
  for (const { partition, offset } of committed[0]?.partitions ?? []) {
    if (want.get(partition) !== offset) {
      throw new Error(`group ${groupId} not at the end of ${topic}[${partition}]: ${offset}, not ${want.get(partition)}`);
    }
  }
}

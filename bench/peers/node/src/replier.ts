// The replying microservice of `nest_send`: a Nest Kafka microservice, a process of its own,
// with a @MessagePattern for the topic. Started by main.ts as a child process.
import { Controller, Module, Type } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { MessagePattern, MicroserviceOptions, Payload, Transport } from '@nestjs/microservices';
import { randomUUID } from 'node:crypto';
import { startAtEnd } from './admin';
import { Reply } from './nest-send';
import { KAFKA_LOG_LEVEL, producerConfig, Settings } from './settings';

// ServerKafka appends its postfixId ("-server" by default) to the groupId it is given.
const SERVER_POSTFIX = '-server';

function replierModule(topic: string): Type {
  @Controller()
  class ReplierController {
    @MessagePattern(topic)
    handle(@Payload() event: { event_id: string }): Reply {
      return { event_id: event.event_id, status: 'sent', handled_at: new Date().toISOString() };
    }
  }

  @Module({ controllers: [ReplierController] })
  class ReplierModule {}

  return ReplierModule;
}

export async function runReplier(settings: Settings): Promise<void> {
  // A group of its own per start, begun at the end of the topic: it answers the requests sent
  // from now on, not what earlier runs left on the topic.
  const groupId = `bench-nest-replier-${process.pid}-${randomUUID().slice(0, 8)}`;
  await startAtEnd(settings.brokers, groupId + SERVER_POSTFIX, settings.topic);
  const app = await NestFactory.createMicroservice<MicroserviceOptions>(replierModule(settings.topic), {
    logger: ['error', 'warn'],
    transport: Transport.KAFKA,
    options: {
      client: { clientId: 'bench-nest-replier', brokers: settings.brokers, logLevel: KAFKA_LOG_LEVEL },
      consumer: { groupId },
      postfixId: SERVER_POSTFIX,
      producer: producerConfig(settings),
      send: { acks: settings.acks },
    },
  });
  await app.listen();

  let stopping = false;
  const stop = (): void => {
    if (stopping) {
      return;
    }
    stopping = true;
    setTimeout(() => process.exit(1), 8000).unref();
    app.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  // The parent is gone (even killed): stop too, rather than outlive it.
  process.on('disconnect', stop);
  process.send?.({ type: 'ready' });
}

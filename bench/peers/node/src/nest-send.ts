// Peer `nest_send`: ClientKafka request-reply. The route `send`s the record and answers with
// the reply of the replier (replier.ts), read from `<topic>.reply` by this client's consumer.
import { Body, Controller, DynamicModule, HttpCode, Inject, Module, OnModuleInit, Post } from '@nestjs/common';
import { ClientKafka, ClientsModule, Transport } from '@nestjs/microservices';
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { lastValueFrom } from 'rxjs';
import { ROUTE, VerificationEmailRequest, verificationEmailRequested } from './event';
import { HealthController } from './http';
import { KAFKA_LOG_LEVEL, producerConfig, Settings } from './settings';

export const SETTINGS = Symbol('SETTINGS');
export const KAFKA_CLIENT = 'KAFKA_CLIENT';

export interface Reply {
  event_id: string;
  status: string;
  handled_at: string;
}

export function replyTopic(topic: string): string {
  // ClientKafka's own naming (getResponsePatternName).
  return `${topic}.reply`;
}

// ClientKafka appends its postfixId ("-client" by default) to the groupId it is given.
export const CLIENT_POSTFIX = '-client';

// Every HTTP process has a consumer group of its own on the reply topic: with one partition,
// every group reads every reply and each process keeps those whose correlation id it sent.
// With one shared group only one process would be assigned the partition and the replies of
// the other's requests would never reach it.
export function uniqueGroupId(): string {
  return `bench-nest-send-${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`;
}

@Controller()
export class SendController implements OnModuleInit {
  constructor(
    @Inject(KAFKA_CLIENT) private readonly client: ClientKafka,
    @Inject(SETTINGS) private readonly settings: Settings,
  ) {}

  async onModuleInit(): Promise<void> {
    this.client.subscribeToResponseOf(this.settings.topic);
    // Joins the reply group (assigned the partition) and connects the producer.
    await this.client.connect();
  }

  @Post(ROUTE)
  @HttpCode(200)
  async create(@Body() body: VerificationEmailRequest): Promise<{ event_id: string; reply: Reply }> {
    const event = verificationEmailRequested(body);
    // ClientKafka adds the headers kafka_correlationId, kafka_replyTopic and
    // kafka_replyPartition to the record; key, value and our three headers are kept.
    const reply = await lastValueFrom(this.client.send<Reply>(this.settings.topic, event.record));
    return { event_id: event.eventId, reply };
  }
}

@Module({})
export class NestSendModule {
  static forRoot(settings: Settings, groupId: string): DynamicModule {
    return {
      module: NestSendModule,
      imports: [
        ClientsModule.register([
          {
            name: KAFKA_CLIENT,
            transport: Transport.KAFKA,
            options: {
              client: { clientId: 'bench-nest-send', brokers: settings.brokers, logLevel: KAFKA_LOG_LEVEL },
              consumer: { groupId },
              postfixId: CLIENT_POSTFIX,
              producer: producerConfig(settings),
              send: { acks: settings.acks },
            },
          },
        ]),
      ],
      controllers: [SendController, HealthController],
      providers: [{ provide: SETTINGS, useValue: settings }],
    };
  }
}

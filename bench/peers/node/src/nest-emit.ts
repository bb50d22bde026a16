// Peer `nest_emit`: @nestjs/microservices' ClientKafka in producer-only mode, `emit` per request.
import { Body, Controller, DynamicModule, HttpCode, Inject, Module, OnModuleInit, Post } from '@nestjs/common';
import { ClientKafka, ClientsModule, Transport } from '@nestjs/microservices';
import { RecordMetadata } from 'kafkajs';
import { lastValueFrom } from 'rxjs';
import { Accepted, accepted, ROUTE, VerificationEmailRequest, verificationEmailRequested } from './event';
import { HealthController } from './http';
import { KAFKA_LOG_LEVEL, producerConfig, Settings } from './settings';

export const SETTINGS = Symbol('SETTINGS');
export const KAFKA_CLIENT = 'KAFKA_CLIENT';

@Controller()
export class EmitController implements OnModuleInit {
  constructor(
    @Inject(KAFKA_CLIENT) private readonly client: ClientKafka,
    @Inject(SETTINGS) private readonly settings: Settings,
  ) {}

  async onModuleInit(): Promise<void> {
    // Connects the producer before the app listens; ClientsModule closes it on shutdown.
    await this.client.connect();
  }

  @Post(ROUTE)
  @HttpCode(202)
  async create(@Body() body: VerificationEmailRequest): Promise<Accepted> {
    const event = verificationEmailRequested(body);
    // ClientKafka's serializer keeps a string key and value as they are, adds no header to
    // an emitted event, and sends {topic, messages: [record], ...options.send}.
    const metadata = await lastValueFrom(
      this.client.emit<RecordMetadata[]>(this.settings.topic, event.record),
    );
    return accepted(event, this.settings.topic, metadata);
  }
}

@Module({})
export class NestEmitModule {
  static forRoot(settings: Settings): DynamicModule {
    return {
      module: NestEmitModule,
      imports: [
        ClientsModule.register([
          {
            name: KAFKA_CLIENT,
            transport: Transport.KAFKA,
            options: {
              client: { clientId: 'bench-nest-emit', brokers: settings.brokers, logLevel: KAFKA_LOG_LEVEL },
              producerOnlyMode: true,
              producer: producerConfig(settings),
              send: { acks: settings.acks },
            },
          },
        ]),
      ],
      controllers: [EmitController, HealthController],
      providers: [{ provide: SETTINGS, useValue: settings }],
    };
  }
}

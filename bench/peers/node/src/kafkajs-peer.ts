// Peer `kafkajs`: a raw kafkajs Producer, connected by an async provider, `send` per request.
import {
  Body,
  Controller,
  DynamicModule,
  HttpCode,
  Inject,
  Injectable,
  Module,
  OnApplicationShutdown,
  Post,
} from '@nestjs/common';
import { Kafka, Producer } from 'kafkajs';
import { Accepted, accepted, ROUTE, VerificationEmailRequest, verificationEmailRequested } from './event';
import { HealthController } from './http';
import { KAFKA_LOG_LEVEL, producerConfig, Settings } from './settings';

export const SETTINGS = Symbol('SETTINGS');
export const KAFKA_PRODUCER = Symbol('KAFKA_PRODUCER');

@Controller()
export class ProducerController {
  constructor(
    @Inject(KAFKA_PRODUCER) private readonly producer: Producer,
    @Inject(SETTINGS) private readonly settings: Settings,
  ) {}

  @Post(ROUTE)
  @HttpCode(202)
  async create(@Body() body: VerificationEmailRequest): Promise<Accepted> {
    const event = verificationEmailRequested(body);
    const metadata = await this.producer.send({
      topic: this.settings.topic,
      acks: this.settings.acks,
      messages: [event.record],
    });
    return accepted(event, this.settings.topic, metadata);
  }
}

@Injectable()
export class ProducerCloser implements OnApplicationShutdown {
  constructor(@Inject(KAFKA_PRODUCER) private readonly producer: Producer) {}

  async onApplicationShutdown(): Promise<void> {
    await this.producer.disconnect();
  }
}

@Module({})
export class KafkajsModule {
  static forRoot(settings: Settings): DynamicModule {
    return {
      module: KafkajsModule,
      controllers: [ProducerController, HealthController],
      providers: [
        { provide: SETTINGS, useValue: settings },
        {
          provide: KAFKA_PRODUCER,
          // Nest awaits the factory before it builds anything that injects the producer, so
          // the app cannot listen before the producer is connected.
          useFactory: async (): Promise<Producer> => {
            const kafka = new Kafka({
              clientId: 'bench-kafkajs',
              brokers: settings.brokers,
              logLevel: KAFKA_LOG_LEVEL,
            });
            const producer = kafka.producer(producerConfig(settings));
            await producer.connect();
            return producer;
          },
        },
        ProducerCloser,
      ],
    };
  }
}

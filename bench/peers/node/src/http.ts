// What every Nest peer shares: the health route, validation, the logger, listening and stopping.
import { Controller, DynamicModule, Get, INestApplication, ValidationPipe } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { NestExpressApplication } from '@nestjs/platform-express';
import { Settings } from './settings';

@Controller('health')
export class HealthController {
  // Nest answers nothing before `listen`, and the peers listen only once their producer is
  // connected: an answer means the peer can publish.
  @Get('ready')
  ready(): { status: string } {
    return { status: 'ready' };
  }
}

// Nest's ValidationPipe answers a body that fails validation with its own 400 JSON
// (`{"statusCode":400,"message":[...],"error":"Bad Request"}`), where the Python service
// answers 422: both are a 4xx JSON that names the problem, never a 500. Unknown fields are
// refused (whitelist + forbidNonWhitelisted), like the service's `extra="forbid"`.
export async function createApp(module: DynamicModule): Promise<NestExpressApplication> {
  const app = await NestFactory.create<NestExpressApplication>(module, {
    logger: ['error', 'warn'],
    // app.close() ends keep-alive connections instead of waiting for the clients to.
    forceCloseConnections: true,
  });
  app.useGlobalPipes(
    new ValidationPipe({ whitelist: true, forbidNonWhitelisted: true, forbidUnknownValues: true }),
  );
  return app;
}

// Stop on SIGTERM or SIGINT: close the HTTP server, then the module's hooks disconnect the
// producer (and consumer), while `alongside` stops whatever else there is; exit 0. A stop that
// takes longer than `graceMs` exits 1. A kafkajs consumer's disconnect waits for its fetch in
// flight, which the broker holds for up to the consumer's maxWaitTimeInMs (5 s) when idle.
export function stopOnSignals(app: INestApplication, graceMs: number, alongside?: () => Promise<void>): void {
  let stopping = false;
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) {
      return;
    }
    stopping = true;
    const timer = setTimeout(() => {
      process.stderr.write(`not stopped ${graceMs} ms after ${signal}: exiting\n`);
      process.exit(1);
    }, graceMs);
    timer.unref();
    Promise.all([app.close(), alongside?.()]).then(
        () => process.exit(0),
        (err: unknown) => {
          process.stderr.write(`error while stopping: ${String(err)}\n`);
          process.exit(1);
        },
      );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

export async function listen(app: INestApplication, settings: Settings): Promise<void> {
  await app.listen(settings.port, settings.host);
}

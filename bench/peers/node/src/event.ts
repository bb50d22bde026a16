// The request body and the wire format of the event: the same as the Python service's.
import { randomUUID } from 'node:crypto';
import { IsEmail, IsString, IsUrl, MaxLength } from 'class-validator';
import { RecordMetadata } from 'kafkajs';

export const ROUTE = 'verification-emails';
export const EVENT_TYPE = 'verification_email.requested';

export class VerificationEmailRequest {
  @IsString()
  @MaxLength(254)
  @IsEmail()
  email!: string;

  @IsString()
  @MaxLength(2048)
  @IsUrl({ protocols: ['http', 'https'], require_protocol: true, require_tld: true })
  redirect_url!: string;
}

// The record as ClientKafka and kafkajs take it. `timestamp` is set here (kafkajs would set
// Date.now() when encoding anyway) so that the answer can carry the record's create time:
// the broker's produce response holds a timestamp only for LogAppendTime topics.
export interface OutgoingRecord {
  key: string;
  value: string;
  headers: Record<string, string>;
  timestamp: string;
}

export interface VerificationEmailRequested {
  eventId: string;
  record: OutgoingRecord;
}

export function verificationEmailRequested(body: VerificationEmailRequest): VerificationEmailRequested {
  const eventId = randomUUID();
  const now = Date.now();
  const value = JSON.stringify({
    event_id: eventId,
    event_type: EVENT_TYPE,
    event_version: 1,
    occurred_at: new Date(now).toISOString(),
    email: body.email,
    redirect_url: body.redirect_url,
  });
  return {
    eventId,
    record: {
      key: body.email,
      value,
      headers: { event_id: eventId, event_type: EVENT_TYPE, content_type: 'application/json' },
      timestamp: String(now),
    },
  };
}

export interface Accepted {
  event_id: string;
  topic: string;
  partition: number | null;
  offset: number | null;
  timestamp: number | null;
}

// The body of a 202, from the first RecordMetadata of the produce response. With acks=0 the
// broker sends no response and kafkajs resolves with an empty list: partition, offset and
// timestamp are then null.
export function accepted(
  event: VerificationEmailRequested,
  topic: string,
  metadata: RecordMetadata[] | undefined,
): Accepted {
  const first = metadata?.[0];
  if (first === undefined) {
    return { event_id: event.eventId, topic, partition: null, offset: null, timestamp: null };
  }
  const offset = first.baseOffset ?? first.offset;
  const logAppendTime = first.logAppendTime ?? first.timestamp;
  const timestamp =
    logAppendTime !== undefined && logAppendTime !== '-1' ? Number(logAppendTime) : Number(event.record.timestamp);
  return {
    event_id: event.eventId,
    topic,
    partition: first.partition,
    offset: offset === undefined ? null : Number(offset),
    timestamp,
  };
}

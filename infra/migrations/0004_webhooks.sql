-- Webhook subscriptions (one per URL, each with its own signing secret) and the log of every attempt.
CREATE TABLE webhook_subscriptions (
    subscription_id  text PRIMARY KEY,
    url              text NOT NULL UNIQUE,
    -- Kept retrievable, not hashed: the sender needs it to sign every body. Never put in Temporal
    -- payloads or logs; the delivery activity reads it from here by subscription id.
    secret           text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    rotated_at       timestamptz,
    disabled_at      timestamptz
);

CREATE TABLE webhook_deliveries (
    delivery_id      text NOT NULL,               -- X-Sightline-Delivery: the same on every attempt
    attempt          integer NOT NULL,            -- the Temporal activity attempt, from 1
    subscription_id  text NOT NULL REFERENCES webhook_subscriptions (subscription_id),
    event            text NOT NULL,
    url              text NOT NULL,
    workflow_id      text,
    status_code      integer,                     -- null when no response came (connection error, timeout)
    error            text,                        -- null on success
    duration_ms      double precision NOT NULL,
    at               timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (delivery_id, attempt)
);
CREATE INDEX webhook_deliveries_at ON webhook_deliveries (at DESC);
CREATE INDEX webhook_deliveries_subscription ON webhook_deliveries (subscription_id, at DESC);

-- Security hardening (issue 13): key scopes, webhooks registered to a site with secret rotation, and
-- server-side reviewer sessions.

-- A key may be limited to some sites and cameras; an empty list means "any". Both set: the site must be
-- one of the sites and the camera one of the cameras.
ALTER TABLE api_keys
    ADD COLUMN site_ids    text[] NOT NULL DEFAULT '{}',
    ADD COLUMN camera_ids  text[] NOT NULL DEFAULT '{}';

-- A batch may name a webhook only when an operator registered its URL for the batch's site. Rows with
-- no site were created for URLs from the operator's own settings (review escalations, drift) or by
-- batches before registration existed: deliveries to them go on, new batches cannot name them.
-- During a rotation window deliveries are signed with the previous secret as well.
ALTER TABLE webhook_subscriptions
    ADD COLUMN site_id                     text,
    ADD COLUMN registered_at               timestamptz,
    ADD COLUMN previous_secret             text,
    ADD COLUMN previous_secret_expires_at  timestamptz;
CREATE INDEX webhook_subscriptions_site ON webhook_subscriptions (site_id) WHERE site_id IS NOT NULL;

-- Reviewer page sessions. The cookie holds a random id; only its sha256 is stored. A session ends at
-- its expiry, at sign-out (revoked_at), or when its key is revoked. `state` is the page's own memory
-- (queue scope, task in hand, skipped tasks, the next flash message): it never travels in the cookie.
CREATE TABLE review_sessions (
    session_hash  text PRIMARY KEY,
    key_id        text NOT NULL REFERENCES api_keys (key_id),
    csrf_token    text NOT NULL,
    state         jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz,
    last_seen_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX review_sessions_key ON review_sessions (key_id);
CREATE INDEX review_sessions_expires ON review_sessions (expires_at);

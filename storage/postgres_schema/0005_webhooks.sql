-- The webhook outbox: the webhooks made through the admin API (those of
-- the configuration live in it), and every delivery of an event to a
-- webhook, from the moment the event is accepted until DeliveryRetention
-- after the delivery finished. A delivery names its webhook without a
-- foreign key: configured webhooks have no row here.

CREATE TABLE webhooks (
	id         text COLLATE "C" PRIMARY KEY,
	url        text   NOT NULL,
	events     text[] NOT NULL,
	secret     text   NOT NULL,
	source     text   NOT NULL,
	created_ns bigint NOT NULL
);

CREATE TABLE webhook_deliveries (
	id              text COLLATE "C" PRIMARY KEY,
	webhook_id      text COLLATE "C" NOT NULL,
	url             text    NOT NULL,
	event_id        text    NOT NULL,
	event_type      text    NOT NULL,
	payload         bytea   NOT NULL,
	state           text    NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
	attempts        integer NOT NULL,
	next_attempt_ns bigint,
	last_attempt_ns bigint,
	last_status     integer NOT NULL,
	last_error      text    NOT NULL,
	created_ns      bigint  NOT NULL,
	-- The instance that claimed the delivery has it to itself until then.
	lease_until_ns  bigint,
	-- NULL while pending; once finished, the end of its retention.
	expires_ns      bigint
);
-- The claim: pending deliveries, oldest next attempt first.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_ns, id) WHERE state = 'pending';
-- The listing, newest first.
CREATE INDEX webhook_deliveries_created ON webhook_deliveries (created_ns DESC, id);
-- DeleteWebhook fails the pending deliveries of one webhook.
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id) WHERE state = 'pending';
-- The sweep.
CREATE INDEX webhook_deliveries_expiry ON webhook_deliveries (expires_ns);

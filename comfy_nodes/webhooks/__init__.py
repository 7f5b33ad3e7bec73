"""Webhooks: a job's endings told to URLs, at least once, signed.

  targets.py     what a job, a template or the host's config may name: URLs and the events each wants
  signing.py     the host's secret and the Standard Webhooks signature (webhook-id, -timestamp, -signature)
  deliveries.py  the delivery records kept in the store (webhook/<job>/<id>) and what GET .../deliveries lists
  outbox.py      the Deliverer: reads the store's outbox, sends with retries and backoff, records the outcome

The outbox is the store's own (Store.put_doc): a job enqueued with notify=True gets an outbox/ document in the
very commit that ends it, so an ending that is committed is never lost for its webhooks, crash or not; the
Deliverer removes the document only once every delivery it makes has ended (2xx, or expired).
"""

"""Pairing a worker with a host: a one-time code the host shows, a password-authenticated key exchange (SPAKE2)
over the host's HTTP API, and the CURVE keys it carries (the worker's into the host's allow-list, the host's broker
key pinned by the worker). docs/pairing.md describes the exchange.

  codes.py      the host's one-time codes: expiry, tries, per-source limits, the refusals it keeps
  exchange.py   the exchange's messages and keys (SPAKE2, transcript confirmation, sealed key boxes): both sides
  book.py       the host's paired workers (store documents paired/<key>) and its broker's allow-list
  host.py       the host's sessions: start and finish an exchange, against codes.py and book.py
  routes.py     the /comfymq/pairing routes (host)
  client.py     the worker's side: runs the exchange, keeps the keys in its data folder (files 0600)
  discovery.py  LAN discovery (mDNS/DNS-SD, `_comfymq._tcp`): the host's Advertiser, the worker's browse(); hints only

Importing this package never raises: spake2, cryptography and zeroconf are imported where they run.
"""

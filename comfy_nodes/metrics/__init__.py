"""Metrics for a shared farm, in the Prometheus text format (GET /comfymq/metrics).

exposition.py  counters, gauges and histograms with labels, written as Prometheus text (format 0.0.4); no
               dependency (tests read the text with prometheus_client's parser)
farm.py        FarmMetrics: what the host measures as jobs move (a service listener on broker events: queue wait
               and run time per worker, requeues, failures, HTTP enqueue latency) and what it reads at scrape
               (jobs per state, workers, broker message counts, store and disk figures)
"""

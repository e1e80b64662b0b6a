"""The alert wing: a surface beside ``bot.slack`` and ``bot.cli``.

- ``webhooks``: POST /hooks/* validate, authenticate and enqueue typed jobs;
- ``payloads``: one typed payload per job kind, built by the enqueuer, read by the runner;
- ``worker``: the queue consumer and watch scheduler every replica runs;
- ``incidents``: a paged thread's record in Redis and its cross-replica lock;
- ``paged``: what an alert (or a watch that turns bad) posts into its thread;
- ``watches``: the watch scheduler and one tick;
- ``lifecycle``: stop signals and the registry of live loops the others share.
"""

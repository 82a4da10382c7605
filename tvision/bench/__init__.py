"""Benchmarks, one module per job.

- ``defaults``     every benchmark's defaults (durations, concurrencies, top-k);
- ``images``       the traffic: real photos re-encoded at real sizes;
- ``load``         a closed-loop load generator;
- ``server_side``  CPU by server process and batch sizes executed, from the server;
- ``paths``        limit, served, client-side and naive, each measured the same way;
- ``report``       typed results and the ratio targets;
- ``render``       tables and the plot;
- ``run``          ``tvision bench``: export, serve, run the paths;
- ``sdk``          ``tvision bench-sdk``: the SDK against raw tritonclient;
- ``preprocess``   ``tvision bench-preprocess``: each speed-up against its baseline.

Every benchmark prints its figures beside a baseline measured in the same run, as ratios,
because a shared machine is noisy.
"""

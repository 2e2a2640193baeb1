"""``segmentflow dashboard``: a small live dashboard (aiohttp + plain HTML/JS/SVG, no CDN).

It polls the worker's ``/segments`` and ``/metrics`` and consumes ``segment-changes`` (and the
triggers' dead-letter topic) to show segment populations over time, lifecycle transitions between
stages (Sankey) and per minute, recent changes and dead-letter rates.
"""

from __future__ import annotations

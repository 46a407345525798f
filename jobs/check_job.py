"""Flink entry point of the connectivity job (Kafka -> Python map -> Kafka).

Locally: `python jobs/check_job.py --in-topic A --out-topic B`; under the Flink
Kubernetes Operator this file is the `-py` argument of the PythonDriver.
"""

from __future__ import annotations

import sys

from feature_store.stream.passthrough import main

if __name__ == "__main__":
    sys.exit(main())

"""After-run analysis: scores of documents under a checkpoint, membership and canary-order tests,
scaling-law and RegMix fits, the forgetting fit, reports and sweep summaries. It reads runs through
the training core (research/) and is never imported by it."""

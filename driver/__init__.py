"""The driver: builds the components, feeds them, and decides when to evaluate, checkpoint
and stop (launch.py is its command line).

- driver/wiring.py: `Components` (weight store, replay shards, learner, actors), built the same
  way wherever they run; `place` picks where; `shard_rate_limit`.
- driver/in_process.py: every component a plain object in this process (--in-process, tests).
- driver/on_ray.py: every component a Ray actor (placement, ray.remote options, restart policy),
  starting or joining Ray.
- driver/supervision.py: what happens to an actor whose call failed (retry, replace).
- driver/trainer.py: `Trainer`, the one training loop, evaluation, checkpoints, summary.json.
- driver/preflight.py: checks run before anything starts; driver/placement.py: the plan of
  which component goes where; driver/metrics.py: the run logger; driver/timeline.py: start-up
  and exit milestones; driver/reaper.py: a local Ray's processes end with a killed driver.
"""

"""How long each side waits, in one place: every pause, poll and deadline between actors,
replay, the learner and the driver's rounds. The rate limiter (replay/rate_limit.py) decides
*whether* a side waits; these decide how often it looks again and when it gives up its call.
"""

# -- actors --------------------------------------------------------------------------------
# A collect call held by replay's rate limit returns after this long (so a Ray actor keeps
# reporting; in-process a held actor returns at once and the learner takes its turn).
ACTOR_HELD_REPORT_S = 1.0
# The longest pause between a Ray actor's polls for replay room (doubling from 1 ms).
ROOM_POLL_MAX_S = 0.02

# -- the learner's batch stream (replay/stream.py) -----------------------------------------
# Pause between a held learner's asks for a batch (the first re-ask is at once).
BATCH_RETRY_S = 0.002
# A held learner re-reads replay's totals this often, so a restarted shard's share of a batch
# moves to the others; a learning one every TOTALS_REFRESH_UPDATES updates.
TOTALS_REFRESH_S = 0.25
TOTALS_REFRESH_UPDATES = 20

# -- the driver's rounds ---------------------------------------------------------------------
# Updates per learner call before it reports back; between calls a round looks for a stop.
LEARNER_CALL_STEPS = 50
# On Ray a learner call held by replay returns after this long; in-process at once (0: the
# actors must run before there can be more data).
LEARNER_WAIT_S = 0.5
# In-process a round's learning ends after this long: replay may never hold the learner back.
ROUND_LEARNER_S = 10.0
# Collect calls queued per Ray actor: one running, one waiting behind it.
ACTOR_PIPELINE = 2
# A round on Ray waits this long for a first report.
ROUND_WAIT_S = 0.5

# -- placement on a running cluster (driver/on_ray.py) ----------------------------------------
# A job that just ended hands its actors' CPUs back to Ray a moment later; a plan short of CPUs
# looks again this often, up to this long, before it refuses the run.
FREE_CPUS_POLL_S = 0.25
FREE_CPUS_WAIT_S = 15.0

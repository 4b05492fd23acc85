"""How components reach each other: the seam between the plain components and Ray.

A component gets its clients at construction and calls their methods; it never asks which
transport they use. Each client has an in-process implementation (the component on the other
side is a plain object in this process; a call answers at once) and a Ray one (the other side
is a Ray actor handle); driver/in_process.py and driver/on_ray.py pick one when they build the
components.

- transport/weight_store.py: WeightStore, the newest published (version, weights).
- transport/weights.py: WeightPublisher (learner side), WeightClient (actors, evaluation), in-process.
- transport/ray_weights.py: the same two through Ray.
- replay/client.py, replay/ray_client.py: the replay shards' client, in-process and through Ray.
"""

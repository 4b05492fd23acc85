"""The weight store: holds the newest (version, payload) the learner published, for actors and
the evaluator to fetch (transport/weights.py has the publishing and fetching sides). Plain class;
driver/on_ray.py wraps it with ray.remote. No torch here, so its Ray process starts quickly.
"""


class WeightStore:
    """Holds the newest published version."""

    def __init__(self):
        self._version = -1
        self._payload = None

    def __repr__(self) -> str:
        return "WeightStore"

    def publish(self, version: int, payload) -> None:
        if version > self._version:
            self._version, self._payload = version, payload

    def latest(self) -> tuple[int, object]:
        return self._version, self._payload

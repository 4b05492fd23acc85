"""Even whole-number split: replay capacity and batch shares over shards, episode quotas over
evaluation envs."""


def split(total: int, parts: int) -> list[int]:
    """[total // parts + 1] * (total % parts) + [total // parts] * rest."""
    base, extra = divmod(total, parts)
    return [base + (i < extra) for i in range(parts)]

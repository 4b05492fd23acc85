"""The trained policy as a standalone file: obs [B, *O] (float32, or uint8 for image envs) ->
action logits [B, A], saved with torch.export (dynamic batch); load it with torch.export.load,
no project code needed."""
from pathlib import Path

import torch

from common.envs import EnvInfo


class Policy(torch.nn.Module):
    """The policy head of a Muesli network: what is exported."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.inner = net

    def forward(self, obs):
        return self.inner.policy_logits(obs)


def export_policy(net: torch.nn.Module, info: EnvInfo, path: Path) -> None:
    example = torch.zeros(2, *info.obs_shape, dtype=getattr(torch, info.obs_dtype))
    batch = torch.export.Dim("B", min=1, max=4096)
    program = torch.export.export(Policy(net).eval(), (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))

"""The trained policy as a standalone file: obs [B, *O] (float32, or uint8 for image envs) ->
action logits [B, A], saved with torch.export (dynamic batch); load it with torch.export.load,
no project code needed."""

import io
from pathlib import Path

import torch

from common.envs import EnvInfo
from common.files import write_atomic


class Policy(torch.nn.Module):
    """The policy head of a Muesli network: what is exported."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.inner = net

    def forward(self, obs):
        return self.inner.policy_logits(obs)


def export_program(net: torch.nn.Module, info: EnvInfo) -> torch.export.ExportedProgram:
    example = torch.zeros(2, *info.obs_shape, dtype=getattr(torch, info.obs_dtype))
    batch = torch.export.Dim("B", min=1, max=4096)
    return torch.export.export(Policy(net).eval(), (example,), dynamic_shapes=({0: batch},))


def warm_up(net: torch.nn.Module, info: EnvInfo) -> None:
    """Export net once without saving it: a process's first torch.export costs about a second
    (torch._dynamo's set-up), later ones a tenth of that, so a run warms it up before the end."""
    export_program(net, info)


def export_policy(net: torch.nn.Module, info: EnvInfo, path: Path) -> None:
    """Write net's policy to `path` whole or not at all (common/files.write_atomic): saved to
    memory first, so its size is known and a full disk stops a Python write, which removes its
    temp file, not torch's C++ writer (which aborted the process)."""
    buffer = io.BytesIO()
    torch.export.save(export_program(net, info), buffer)
    write_atomic(Path(path), buffer.getvalue())

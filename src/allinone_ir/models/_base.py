"""Common behaviour of the restoration networks: input checks, padding to a multiple, config."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..layers.padding import pad_to_multiple
from ..layers.stage import Stage

__all__ = ["AuxiliaryLoss", "RestorationModel", "check_image_batch"]


def check_image_batch(x: Any, channels: int, name: str = "input") -> None:
    """Raise ``ValueError`` unless ``x`` is a floating ``(N, channels, H, W)`` tensor with ``N, H, W >= 1``.

    Args:
        x: The object to check.
        channels: The expected channel count.
        name: How to call ``x`` in the message.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(
            f"{name} must be a torch.Tensor of shape (N, {channels}, H, W), got {type(x).__name__}"
        )
    if x.ndim != 4:
        raise ValueError(
            f"{name} must have shape (N, {channels}, H, W), got a {x.ndim}-D tensor of shape {tuple(x.shape)}"
            + ("; add a batch dimension with x.unsqueeze(0)" if x.ndim == 3 else "")
        )
    if x.shape[1] != channels:
        raise ValueError(
            f"{name} must have {channels} channels (shape (N, {channels}, H, W)), got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise ValueError(
            f"{name} must be a floating-point tensor with values in [0, 1], got dtype {x.dtype}; "
            "convert with x.float() / 255 for 8-bit images"
        )
    if x.shape[0] == 0 or x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"{name} must have N, H, W >= 1, got shape {tuple(x.shape)}")


@dataclass(frozen=True)
class AuxiliaryLoss:
    """A training term that a model family declares: ``weight * fn(model, batch, extras)``.

    A family lists its terms in :meth:`RestorationModel.auxiliary_losses`; the
    :class:`~allinone_ir.training.Trainer`, the config files and the demo all add them to the
    main loss, so the recipe lives with the network, not in each script.

    Attributes:
        name: Name in the logs (``loss_<name>``) and in config overrides (``trainer.aux_weights``).
        weight: Default weight of the term.
        fn: ``fn(model, batch, extras) -> scalar tensor``: ``model`` is the unwrapped network,
            ``batch`` the batch on the device, ``extras`` what :meth:`RestorationModel.split_training_output`
            returned besides the image (e.g. PIP's ``{"logits": ...}``).
    """

    name: str
    weight: float
    fn: Callable[[nn.Module, Mapping[str, Any], Mapping[str, torch.Tensor]], torch.Tensor]


class RestorationModel(nn.Module):
    """Base class of the networks: validates inputs, pads to the needed multiple, records its config.

    Subclasses set ``in_channels``, ``out_channels``, ``pad_multiple`` and ``config``
    (the constructor arguments, so :mod:`allinone_ir.hub` can rebuild the network)
    and implement ``forward``.

    Attributes:
        in_channels: Channels of the input image.
        out_channels: Channels of the output image.
        pad_multiple: ``H`` and ``W`` are padded to a multiple of this.
        pad_mode: How the input is padded (``"reflect"`` by default).
        config: Constructor arguments.
        accepts_degradation: Whether ``forward`` takes a ``degradation`` argument (PIP networks);
            :func:`allinone_ir.restore` and the trainer pass the user's degradation only to those.
    """

    accepts_degradation: ClassVar[bool] = False

    in_channels: int
    out_channels: int
    pad_multiple: int = 1
    pad_mode: str = "reflect"
    config: dict[str, Any]

    def _pad_input(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        check_image_batch(x, self.in_channels)
        x, size = pad_to_multiple(x, self.pad_multiple, self.pad_mode)
        if self.uses_channels_last() and not x.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)  # keep the whole network in one layout
        return x, size

    def uses_channels_last(self) -> bool:
        """Whether the convolution weights are stored channels-last (the fast layout on CPU and GPU).

        After ``model.to(memory_format=torch.channels_last)`` the network converts its input to
        channels-last as well, so every feature map stays in that layout end to end and the
        output is channels-last (values are the same as with NCHW, within float rounding).

        Returns:
            ``True`` if the first 4-D parameter whose layout is unambiguous is channels-last.

        Examples:
            >>> from allinone_ir.models import NAFNet
            >>> net = NAFNet(width=8, middle_blk_num=1, enc_blk_nums=(1,), dec_blk_nums=(1,))
            >>> net.uses_channels_last(), net.to(memory_format=torch.channels_last).uses_channels_last()
            (False, True)
        """
        for p in self.parameters():
            if p.dim() == 4:  # 1x1 kernels are both NCHW and channels-last contiguous: look further
                channels_last, nchw = p.is_contiguous(memory_format=torch.channels_last), p.is_contiguous()
                if channels_last != nchw:
                    return channels_last
        return False

    @staticmethod
    def _crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return x[..., : size[0], : size[1]]

    def grad_checkpointing_stages(self) -> list[str]:
        """Names of the levels (:class:`~allinone_ir.layers.Stage` modules) that can be checkpointed."""
        return [name for name, m in self.named_modules() if isinstance(m, Stage)]

    def set_grad_checkpointing(self, enable: bool = True, stages: Iterable[str] | None = None) -> None:
        """Recompute the activations of U-Net levels in the backward pass to save memory.

        Args:
            enable: Switch checkpointing on or off.
            stages: Level names (see :meth:`grad_checkpointing_stages`), e.g. ``["encoder_level1"]``;
                ``None`` means all levels.

        Raises:
            ValueError: If a name is not a level of this network.
        """
        known = {name: self.get_submodule(name) for name in self.grad_checkpointing_stages()}
        names = list(known) if stages is None else list(stages)
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"not checkpointable levels: {unknown}; levels are {list(known)}")
        for n in names:
            known[n].grad_checkpointing = enable

    # ------------------------------------------------------------------ training recipe of the family
    def training_forward_kwargs(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Keyword arguments for ``forward`` during training, read from a batch (default: none).

        Everything a training step needs must come out of the one ``forward`` call, so that DDP
        sees every parameter used (PIP asks for the classifier's logits here as well as passing
        the labels).

        Args:
            batch: The batch dict on the device (``degraded``, ``clean``, ``label``, ...).
        """
        return {}

    def split_training_output(self, output: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Split what ``forward(**training_forward_kwargs(batch))`` returned into the image and extras.

        Shape:
            - image: :math:`(N, C_{out}, H, W)`
        """
        return output, {}

    def auxiliary_losses(self) -> list[AuxiliaryLoss]:
        """The family's auxiliary training terms, added to the main loss by the trainer (default: none)."""
        return []

    @property
    def num_parameters(self) -> int:
        """Total number of parameters."""
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.items())

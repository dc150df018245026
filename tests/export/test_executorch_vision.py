"""export/executorch.py's vision-encoder rewrites for XNNPACK: wide depthwise convolutions as tiles."""

import pytest
import torch

from export.executorch import SplitDepthwiseConv, depthwise_convs_split


@pytest.mark.parametrize("kernel,bias", [(7, True), (7, False), (11, True)])
def test_tiles_compute_the_wide_depthwise_convolution(kernel, bias):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, 6, kernel, padding=kernel // 2, groups=6, bias=bias).eval()
    split = SplitDepthwiseConv(conv)
    assert max(max(h, w) for _, h, _, w in split.tiles) <= 5
    assert sum(h * w for _, h, _, w in split.tiles) == kernel * kernel  # the tiles cover the kernel once
    x = torch.randn(2, 6, 9, 13)  # not square, smaller than nothing in particular
    with torch.no_grad():
        torch.testing.assert_close(split(x), conv(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("conv", [
    torch.nn.Conv2d(6, 6, 5, padding=2, groups=6),  # XNNPACK's depthwise kernels take it
    torch.nn.Conv2d(6, 6, 7, padding=3, groups=3),  # not depthwise
    torch.nn.Conv2d(6, 12, 7, padding=3, groups=6),  # a channel multiplier
    torch.nn.Conv2d(6, 6, 7, stride=2, padding=3, groups=6),
    torch.nn.Conv2d(6, 6, 7, padding=0, groups=6),  # not "same" padding
])
def test_other_convolutions_are_left_alone(conv):
    assert not SplitDepthwiseConv.applies(conv)


def test_the_split_is_undone_after_the_block():
    import timm

    model = timm.create_model("fastvit_mci0", pretrained=False, num_classes=0, inference_mode=True,
                              layers=[1, 1, 1, 1], embed_dims=[16, 32, 64, 128], mlp_ratios=[2, 2, 2, 2]).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = model.forward_features(x)
        wide = [m for m in model.modules() if SplitDepthwiseConv.applies(m)]
        with depthwise_convs_split(model) as count:
            assert count == len(wide) > 0  # the ConvMlp and positional-encoding 7 x 7 convolutions
            assert not any(SplitDepthwiseConv.applies(m) for m in model.modules())
            torch.testing.assert_close(model.forward_features(x), before, rtol=1e-4, atol=1e-5)
        assert [m for m in model.modules() if SplitDepthwiseConv.applies(m)] == wide

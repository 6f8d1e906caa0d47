"""PyTorch copies of normzoo's three CIFAR image classifiers, so that the Rust benchmarks can be
set beside PyTorch on the same networks.

Each network mirrors normzoo's Rust definition as `crates/normzoo-models/src/registry.rs` builds
it by name: the same layers in the same order, kernel sizes, strides, padding, biases, ε,
pooling and classifier.

- "resnet18-cifar": `ResNetConfig::resnet18_cifar` in `crates/normzoo-models/src/resnet.rs`
- "vgg16-bn-cifar": `VggConfig::vgg16_cifar` with batch norm in `crates/normzoo-models/src/vgg.rs`
- "convnext-cifar": `ConvNextConfig::cifar` in `crates/normzoo-models/src/convnext.rs`

Only each model's own normalizer is modelled (BatchNorm for the ResNet and the VGG,
channels-first LayerNorm for the ConvNeXt); normzoo's swapped normalizers are not.
Initialisation is PyTorch's and torchvision's, which may differ from normzoo's. torchvision is
imported by the models only, so that `LayerNorm2d` needs torch alone.

To check the trainable-parameter counts and output shapes against normzoo's:

    python3 benches/cifar_models.py
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

NAMES = ("resnet18-cifar", "vgg16-bn-cifar", "convnext-cifar")

# normzoo's trainable parameters at 10 classes: resnet.rs's and vgg.rs's tests (14,714,688 in
# the convolutions + 8,448 in the batch norms + 5,130 in the classifier) and, for the ConvNeXt,
# counted from convnext.rs.
PARAMS = {"resnet18-cifar": 11_173_962, "vgg16-bn-cifar": 14_728_266, "convnext-cifar": 6_378_954}


class LayerNorm2d(nn.LayerNorm):
    """timm's channels-first LayerNorm (ConvNeXt's, normzoo's `layer2d`): LayerNorm over axis 1
    of [N, C, H, W], ε = 1e-6."""

    def __init__(self, channels):
        super().__init__(channels, eps=1e-6)

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def resnet18_cifar(num_classes=10, norm_layer=nn.BatchNorm2d):
    """ResNet18 with the CIFAR stem: torchvision's `resnet18` with a 3×3, stride-1 first
    convolution and no max-pool. `norm_layer` is torchvision's (channels → module)."""
    import torchvision

    model = torchvision.models.resnet18(num_classes=num_classes, norm_layer=norm_layer)
    model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()
    return model


def vgg16_bn_cifar(num_classes=10):
    """VGG16 with batch norm and the CIFAR head: five stages of (3×3 convolution with bias,
    padding 1 → BatchNorm → ReLU), each closed by a 2×2 max-pool (32×32 down to 1×1), then
    Linear(512, num_classes). No dropout: the CIFAR head has no hidden layers."""
    layers, channels = [], 3
    for stage in ([64] * 2, [128] * 2, [256] * 3, [512] * 3, [512] * 3):
        for out in stage:
            conv = nn.Conv2d(channels, out, 3, padding=1)
            layers += [conv, nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            channels = out
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels, num_classes))


class ConvNextBlock(nn.Module):
    """`x + drop_path(γ ⊙ pwconv2(gelu(pwconv1(norm(dwconv(x))))))`: a 7×7 depthwise
    convolution, LayerNorm2d on channels first, then the point-wise layers on channels last;
    γ starts at 1e-6. Stochastic depth drops whole samples in training (omitted at rate 0)."""

    def __init__(self, dim, drop_path):
        from torchvision.ops import StochasticDepth

        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = LayerNorm2d(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))
        self.drop_path = StochasticDepth(drop_path, "row") if drop_path > 0 else nn.Identity()

    def forward(self, x):
        y = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)
        y = self.pwconv2(F.gelu(self.pwconv1(y))) * self.gamma
        return x + self.drop_path(y.permute(0, 3, 1, 2))


def convnext_cifar(num_classes=10, drop_path_rate=0.1):
    """The small ConvNeXt for 32×32 images: a 2×2, stride-2 stem convolution and LayerNorm2d,
    four stages of two blocks (64, 128, 256, 512 channels; 16×16 down to 2×2), each stage after
    the first opened by LayerNorm2d and a 2×2, stride-2 convolution; then global average
    pooling, LayerNorm2d and Linear(512, num_classes). Block k (0 to 7) drops its branch with
    probability `drop_path_rate · k / 7`."""
    depths, dims = (2, 2, 2, 2), (64, 128, 256, 512)
    layers = [nn.Conv2d(3, dims[0], 2, 2), LayerNorm2d(dims[0])]
    total, index = sum(depths), 0
    for stage, (depth, dim) in enumerate(zip(depths, dims)):
        if stage > 0:
            layers += [LayerNorm2d(dims[stage - 1]), nn.Conv2d(dims[stage - 1], dim, 2, 2)]
        for _ in range(depth):
            layers.append(ConvNextBlock(dim, drop_path_rate * index / (total - 1)))
            index += 1
    pool = nn.AdaptiveAvgPool2d(1)
    head = [pool, LayerNorm2d(dims[-1]), nn.Flatten(), nn.Linear(dims[-1], num_classes)]
    return nn.Sequential(*layers, *head)


def build(name: str, num_classes: int = 10, norm: str | None = None) -> nn.Module:
    """The network called `name` (one of `NAMES`) with `num_classes` outputs. `norm` may only
    name the model's own normalizer ("batch" for the ResNet and the VGG, "layer2d" for the
    ConvNeXt; None for it too): other normalizers are not modelled."""
    builders = {
        "resnet18-cifar": ("batch", resnet18_cifar),
        "vgg16-bn-cifar": ("batch", vgg16_bn_cifar),
        "convnext-cifar": ("layer2d", convnext_cifar),
    }
    if name not in builders:
        raise ValueError(f"unknown model {name!r}: expected one of {', '.join(NAMES)}")
    own, builder = builders[name]
    if norm not in (None, own):
        raise ValueError(f"{name}: only its own normalizer, {own!r}, is modelled, not {norm!r}")
    return builder(num_classes)


if __name__ == "__main__":
    for name in NAMES:
        model = build(name).eval()
        params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        with torch.no_grad():
            shape = tuple(model(torch.rand(2, 3, 32, 32)).shape)
        print(f"{name}: {params:,} parameters (normzoo: {PARAMS[name]:,}), output {list(shape)}")
        assert params == PARAMS[name] and shape == (2, 10), name

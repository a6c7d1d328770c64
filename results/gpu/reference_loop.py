"""Hand-written GPU-resident training loop: the yardstick for the harness's overhead.

ResNet-18 (timm, CIFAR-style stem) on Fashion-MNIST held on the GPU as uint8,
batch 512, SGD nesterov with a one-cycle LR, random crop and flip on the GPU,
bf16 autocast, channels_last: the setup of ../shared/DATA.md, written without
the harness. Prints one JSON line with per-epoch seconds, seconds per trained sample
and test accuracy. Compare the harness with it per sample, not per epoch (the harness
trains the split left after its validation carve, and keeps its tail batch): its
uniform cell's train_seconds / (epochs x n_train) against `seconds_per_sample` here,
at the same `--train-limit` (the first N training images).

    python results/gpu/reference_loop.py --root .cache/data --epochs 10 [--train-limit 20000]
"""
import argparse
import json
import time

import timm
import torch
import torch.nn.functional as F
import torchvision

p = argparse.ArgumentParser()
p.add_argument("--root", default=".cache/data")
p.add_argument("--epochs", type=int, default=10)
p.add_argument("--batch-size", type=int, default=512)
p.add_argument("--train-limit", type=int, default=0, help="train on the first N images (0: all 60,000)")
a = p.parse_args()
dev = torch.device("cuda")
torch.backends.cudnn.benchmark = True
torch.manual_seed(0)

tr = torchvision.datasets.FashionMNIST(a.root, train=True)
te = torchvision.datasets.FashionMNIST(a.root, train=False)
xtr, ytr = tr.data.unsqueeze(1).to(dev), tr.targets.to(dev)
if a.train_limit:
    xtr, ytr = xtr[: a.train_limit], ytr[: a.train_limit]
xte, yte = te.data.unsqueeze(1).to(dev), te.targets.to(dev)
mean, std = xtr.float().div(255).mean(), xtr.float().div(255).std()

net = timm.create_model("resnet18", num_classes=10, in_chans=1)
net.conv1 = torch.nn.Conv2d(1, 64, 3, 1, 1, bias=False)
net.maxpool = torch.nn.Identity()
net = net.to(dev, memory_format=torch.channels_last)
steps = a.epochs * (len(xtr) // a.batch_size)
opt = torch.optim.SGD(net.parameters(), lr=0.2, momentum=0.9, nesterov=True, weight_decay=5e-4)
sched = torch.optim.lr_scheduler.OneCycleLR(opt, 0.2, total_steps=steps, pct_start=0.2, anneal_strategy="linear")


def prep(x, train):
    x = x.float().div(255)
    if train:
        n = len(x)
        pad = F.pad(x, (2, 2, 2, 2), mode="reflect")
        dy, dx = torch.randint(0, 5, (2, n), device=dev)
        rows = (torch.arange(28, device=dev)[None, :, None] + dy[:, None, None]).expand(n, 28, 28)
        cols = (torch.arange(28, device=dev)[None, None, :] + dx[:, None, None]).expand(n, 28, 28)
        x = pad[torch.arange(n, device=dev)[:, None, None], 0, rows, cols].unsqueeze(1)
        x = torch.where(torch.rand(n, 1, 1, 1, device=dev) < 0.5, x.flip(3), x)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


def step(idx):
    with torch.autocast("cuda", torch.bfloat16):
        loss = F.cross_entropy(net(prep(xtr[idx], True)).float(), ytr[idx])
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


# warm-up (cuDNN autotuning) on a throwaway copy of the state
state = {k: v.clone() for k, v in net.state_dict().items()}
for _ in range(2):
    step(torch.arange(a.batch_size, device=dev))
net.load_state_dict(state)
opt = torch.optim.SGD(net.parameters(), lr=0.2, momentum=0.9, nesterov=True, weight_decay=5e-4)
sched = torch.optim.lr_scheduler.OneCycleLR(opt, 0.2, total_steps=steps, pct_start=0.2, anneal_strategy="linear")

epoch_s = []
for e in range(a.epochs):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    net.train()
    perm = torch.randperm(len(xtr), device=dev)
    for b in range(len(xtr) // a.batch_size):
        step(perm[b * a.batch_size:(b + 1) * a.batch_size])
        sched.step()
    torch.cuda.synchronize()
    epoch_s.append(time.perf_counter() - t0)

net.eval()
with torch.no_grad(), torch.autocast("cuda", torch.bfloat16):
    correct = sum((net(prep(xte[s:s + 2048], False)).argmax(1) == yte[s:s + 2048]).sum().item()
                  for s in range(0, len(xte), 2048))
per_epoch = (len(xtr) // a.batch_size) * a.batch_size  # trained samples an epoch (the partial batch is dropped)
print(json.dumps({"hardware": torch.cuda.get_device_name(), "epoch_seconds": epoch_s,
                  "mean_epoch_seconds": sum(epoch_s[1:]) / max(1, len(epoch_s) - 1),
                  "seconds_per_sample": sum(epoch_s[1:]) / max(1, len(epoch_s) - 1) / per_epoch,
                  "samples_per_epoch": per_epoch, "test_acc": correct / len(xte), "n_train": len(xtr)}))

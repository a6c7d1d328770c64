"""c-SGD: Active Bias "SGD sampled by threshold closeness" (Chang et al. 2017, "Active
Bias: Training More Accurate Neural Networks by Emphasizing High Variance Samples",
NeurIPS, arXiv 1704.07433; named c-SGD in the IMPON paper, seed 004).

Score of sample i (default `uncertainty="closeness"`, as METHODS.md and the IMPON paper
define c-SGD): mean p_i * (1 - mean p_i), the uncertainty of the history mean of the
predicted probability of its training label; it peaks at p = 0.5, so samples near the
decision threshold are drawn most. Option `uncertainty="variance"`: the paper's other
uncertainty, "SGD sampled by prediction variance", the confidence-corrected standard
deviation of the p history, sqrt(var + var^2 / (n - 1)) (n visits); a sample with fewer
than 2 visits has no variance yet and gets the largest known score (all equal when none
is known, e.g. after a single warm-up epoch: that epoch's draw is then uniform).

The sampling, warm-up, smoothing and where we differ from the paper are in
baselines/_prob_history.py (shared with p-SGD).
"""
import torch

from baselines._prob_history import ProbHistoryMethod
from bench.method import register

UNCERTAINTIES = ("closeness", "variance")


@register
class CSGD(ProbHistoryMethod):
    name = "csgd"

    def __init__(self, drop: float = 0.0, warmup_epochs: int = 1, epsilon: float = 0.2, replacement: bool = True,
                 uncertainty: str = "closeness"):
        super().__init__(drop, warmup_epochs=warmup_epochs, epsilon=epsilon, replacement=replacement)
        if uncertainty not in UNCERTAINTIES:
            raise ValueError(f"uncertainty must be one of {', '.join(UNCERTAINTIES)}, got {uncertainty!r}")
        self.uncertainty = uncertainty

    def score(self, count: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        if self.uncertainty == "closeness":
            return mean * (1.0 - mean)
        std = (var + var**2 / (count - 1).clamp(min=1)).sqrt()
        known = ~std.isnan()
        fill = std[known].max() if bool(known.any()) else torch.tensor(1.0, dtype=std.dtype)
        return torch.where(known, std, fill)

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
"""
import torch

from baselines._prob_history import ProbHistoryMethod
from bench.method import Param, register


@register
class CSGD(ProbHistoryMethod):
    name = "csgd"
    uncertainty = Param("closeness", choices=("closeness", "variance"), doc="p(1 - p), or the p history's spread")

    def score(self, count, mean, var):
        if self.uncertainty == "closeness":
            return mean * (1.0 - mean)
        std = (var + var**2 / (count - 1).clamp(min=1)).sqrt()
        known = ~std.isnan()
        fill = torch.where(known, std, torch.zeros_like(std)).max()
        return torch.where(known, std, torch.where(known.any(), fill, torch.ones_like(fill)))

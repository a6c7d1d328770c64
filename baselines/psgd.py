"""p-SGD: Active Bias "SGD sampled by difficulty" (Chang et al. 2017, "Active Bias:
Training More Accurate Neural Networks by Emphasizing High Variance Samples", NeurIPS,
arXiv 1704.07433; named p-SGD in the IMPON paper, seed 004).

Score of sample i: 1 - mean p_i, the mean over its history of the predicted probability
of its training label (from the training forwards), plus the smoothness constant: low-p
(hard) samples are drawn more often. Each epoch after the uniform warm-up draws
round(keep * N) samples with replacement by these probabilities.

Our reading: the seed's p-SGD formula is garbled; we read it as Active Bias's
"difficulty" sampling, 1 - p + epsilon (METHODS.md), and the value of epsilon is a
guess too (see baselines/_prob_history.py). Hence `faithful = False`.
"""
from baselines._prob_history import ProbHistoryMethod
from bench.method import register


@register
class PSGD(ProbHistoryMethod):
    name = "psgd"
    faithful = False
    caveat = ("score 1 - mean p(label) + epsilon is our reading of the seed's garbled p-SGD formula "
              "(Active Bias's difficulty sampling); epsilon 0.2 (relative) is a guess")

    def score(self, count, mean, var):
        return 1.0 - mean

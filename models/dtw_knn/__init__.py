"""DTW-KNN learner: fast exact DTW (numba lane kernels), pruned k-NN search, classifier."""

from models.dtw_knn.classifier import DTWKNNClassifier

__all__ = ["DTWKNNClassifier"]

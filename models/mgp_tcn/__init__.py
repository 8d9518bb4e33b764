"""MGP-TCN learner: multitask Gaussian process adapter + temporal convolutional network."""

from models.mgp_tcn.classifier import MGPTCNClassifier
from models.mgp_tcn.search import SearchParams, SearchResult, search_hyperparameters

__all__ = ["MGPTCNClassifier", "SearchParams", "SearchResult", "search_hyperparameters"]

"""The two-layer ReLU network trained by backpropagation (the non-convex row of method.md's Table 1).

The network ``f(a) = sum_j (a^T u_j + b_j)_+ w_j + c`` is trained with torch's Adam on the weight-decay
objective ``1/2 ||f(A) - Y||_F^2 + beta/2 (||U||_F^2 + ||W||_F^2)`` (one-hot ``Y``; the same objective as
the convex models', method.md eq. 16, before the rescaling), in mini-batches scaled to the full sum.
Seeded: the initial weights and the batch order come from ``random_state``.
"""

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from tqdm.auto import tqdm

from features.parameters import (DEVICE, IMAGE_SHAPE, NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT,
                                 RANDOM_STATE)

from .two_layer import TwoLayerNetworkMixin, network_objective


class BackpropNetwork(TwoLayerNetworkMixin, BaseEstimator):
    """Two-layer ReLU network with weight decay, trained by Adam on pixel rows.

    Parameters
    ----------
    n_hidden : int, hidden neurons (match the convex model it is compared with)
    bias : bool, biases in both layers (unpenalised); without them the network is Theorem 15's
    beta : float >= 0, weight decay in the units of the summed squared loss
    epochs : int; batch_size : int; learning_rate : float (Adam)
    device : "cpu" or "cuda" (torch device)
    random_state : None or int, seeds the initial weights and the batch order
    verbose : int, a progress bar over epochs when > 0
    image_shape : None, (H, W) or (H, W, C), for flattened images

    Attributes
    ----------
    hidden_weights_ (d, m), hidden_bias_ (m,), output_weights_ (m, K), output_bias_ (K,): the network
    objective_history_ : list of float, the weight-decay objective on the whole training set after each
    epoch (index 0: at initialisation); objective_ : float, the rescaled objective (eq. 16) at the end
    classes_ : (K,) labels
    """

    _parameter_constraints = {
        "n_hidden": [POSITIVE_INT], "bias": ["boolean"], "beta": [NON_NEGATIVE], "epochs": [NON_NEGATIVE_INT],
        "batch_size": [POSITIVE_INT], "learning_rate": [POSITIVE], "device": DEVICE, "random_state": RANDOM_STATE,
        "verbose": ["verbose"], "image_shape": IMAGE_SHAPE,
    }

    def __init__(self, n_hidden=100, bias=True, beta=1e-3, epochs=20, batch_size=256, learning_rate=1e-3, device="cpu",
                 random_state=None, verbose=0, image_shape=None):
        self.n_hidden = n_hidden
        self.bias = bias
        self.beta = beta
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.image_shape = image_shape

    def fit(self, X, y):
        """Fit on images ``X`` (N, ...) and labels ``y`` (N,)."""
        self._validate_params()
        rows = self._pixel_rows(X, reset=True)
        targets = self._one_hot(y, len(rows))
        rng = check_random_state(self.random_state)
        generator = torch.Generator().manual_seed(int(rng.randint(2**31)))
        inputs = torch.as_tensor(rows, dtype=torch.float32, device=self.device)
        outputs = torch.as_tensor(targets, dtype=torch.float32, device=self.device)
        network = torch.nn.Sequential(torch.nn.Linear(rows.shape[1], self.n_hidden, bias=self.bias), torch.nn.ReLU(),
                                      torch.nn.Linear(self.n_hidden, targets.shape[1], bias=self.bias))
        with torch.no_grad():  # torch's default initialisation, drawn from our generator
            for parameter, layer in ((p, layer) for layer in (network[0], network[2]) for p in layer.parameters()):
                bound = 1.0 / np.sqrt(layer.in_features)
                parameter.uniform_(-bound, bound, generator=generator)
        network.to(self.device)
        optimizer = torch.optim.Adam(network.parameters(), lr=self.learning_rate)
        self.objective_history_ = [self._full_objective(network, inputs, outputs)]
        for _ in tqdm(range(self.epochs), desc="backprop epochs", disable=self.verbose <= 0):
            self._epoch(network, optimizer, inputs, outputs, generator)
            self.objective_history_.append(self._full_objective(network, inputs, outputs))
        self._store_network(network)
        self.objective_ = network_objective(rows, targets, self.beta, *self.network_)
        return self

    def _weight_decay(self, network):
        return 0.5 * self.beta * (network[0].weight.square().sum() + network[2].weight.square().sum())

    def _epoch(self, network, optimizer, inputs, outputs, generator):
        """One pass over the data in random batches; each batch's loss is scaled to the full sum."""
        n_samples = len(inputs)
        order = torch.randperm(n_samples, generator=generator).to(inputs.device)
        for start in range(0, n_samples, self.batch_size):
            batch = order[start:start + self.batch_size]
            loss = 0.5 * (network(inputs[batch]) - outputs[batch]).square().sum() * (n_samples / len(batch))
            optimizer.zero_grad()
            (loss + self._weight_decay(network)).backward()
            optimizer.step()

    def _full_objective(self, network, inputs, outputs):
        with torch.no_grad():
            loss = 0.5 * (network(inputs) - outputs).square().sum() + self._weight_decay(network)
        return float(loss)

    def _store_network(self, network):
        def array(layer, name):
            value = getattr(layer, name)
            return (np.zeros(layer.weight.shape[0]) if value is None
                    else value.detach().cpu().double().numpy().T.copy())

        hidden, output = network[0], network[2]
        self.hidden_weights_, self.hidden_bias_ = array(hidden, "weight"), array(hidden, "bias")
        self.output_weights_, self.output_bias_ = array(output, "weight"), array(output, "bias")

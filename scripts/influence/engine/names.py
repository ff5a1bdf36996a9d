"""Names shared by writers and readers of artefacts (safetensors keys, metadata)."""

# Factor names: the safetensors key of a tensor is f"{module}.{factor}".
ACTIVATION_COVARIANCE = "activation_covariance"  # sum of a aᵀ over tokens
GRADIENT_COVARIANCE = "gradient_covariance"  # sum of g gᵀ over tokens
ACTIVATION_EIGENVALUES = "activation_eigenvalues"
ACTIVATION_EIGENVECTORS = "activation_eigenvectors"
GRADIENT_EIGENVALUES = "gradient_eigenvalues"
GRADIENT_EIGENVECTORS = "gradient_eigenvectors"
EIGENVALUE_CORRECTION = "eigenvalue_correction"  # sum of (Q_Sᵀ G Q_A)² over sequences

# Preconditioned query artefacts.
PRECONDITIONED = "preconditioned"  # (Q, d_out, d_in) full rank
LEFT = "left"  # (Q, d_out, r): U·diag(s) of the rank-r approximation
RIGHT = "right"  # (Q, d_in, r): V of the rank-r approximation
DAMPING = "damping"  # scalar λ actually used for the layer
QUERY_NORMS = "query_norms"  # (Q,) ‖∇L_q‖ over all tracked layers (for cosine)
# The candidates' metric of a unit-normalised curvature estimator (ekfac_cosine): ‖(G + λ)^{-1/2} g‖ at scoring.
METRIC_ROTATION_A = "metric_activation_eigenvectors"  # Q_A (d_in, d_in)
METRIC_ROTATION_S = "metric_gradient_eigenvectors"  # Q_S (d_out, d_out)
METRIC_DENOMINATOR = "metric_denominator"  # Λ + λ (d_out, d_in) in the Kronecker eigenbasis

# Artefact kinds (the META_KIND of each safetensors file).
KIND_COVARIANCE = "covariance"
KIND_EIGEN = "eigen"
KIND_CORRECTION = EIGENVALUE_CORRECTION
KIND_PRECONDITIONED = "preconditioned"
KIND_IDF = "tfidf_idf"
KIND_INDEX = "gradient_index"  # projected candidate gradients (engine/index.py)

# Factor inputs of the rules that precondition (the `input:` keys estimators.Estimator.factors names).
EIGEN_INPUT = "eigen"
CORRECTION_INPUT = "correction"

# Score tables: per-layer influence columns are f"{LAYER_PREFIX}{module}".
LAYER_PREFIX = "layer:"

# Metadata keys (values are JSON strings in the safetensors header).
META_KIND = "kind"
META_MODEL = "model_fingerprint"
META_MODULES = "modules"
META_TOKENS = "n_tokens"
META_SEQUENCES = "n_sequences"
META_SETTINGS = "settings"
META_CHECKSUM = "checksum"  # "sha256:<hex>" of the data (engine/integrity.py); parquet: in the schema metadata


def key(module: str, factor: str) -> str:
    """The safetensors key of `factor` for tracked `module`."""
    return f"{module}.{factor}"

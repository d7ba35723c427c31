"""Deep Compression's storage side: entropy coding, sparse layouts and the compressed weight container."""

from edgec.compare import Tolerance

# Compression changes logits far more than rounding does; what must survive is the decision.
FIDELITY = Tolerance(min_cosine=0.9, min_top1_agreement=0.9)

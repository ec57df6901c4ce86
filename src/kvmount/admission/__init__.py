"""`kvmount admission`: a validating admission webhook that runs `kvmount validate`'s checks on
each SecretProviderClass and SecretSync created or updated, answering the findings as warnings
(or a refusal)."""

from kvmount.admission.review import BadReview, review

__all__ = ["BadReview", "review"]

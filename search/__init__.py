"""Text, image and combined search over a library: encode, ANN, filter, hydrate."""

from search.engine import SearchEngine
from search.query import Filters, SearchHit, SearchQuery

__all__ = ["Filters", "SearchEngine", "SearchHit", "SearchQuery"]

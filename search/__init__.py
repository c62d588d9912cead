"""Text, image and combined search over a library: encode, ANN, filter, hydrate."""

from vlsearch.search.engine import SearchEngine
from vlsearch.search.query import Filters, SearchHit, SearchQuery

__all__ = ["Filters", "SearchEngine", "SearchHit", "SearchQuery"]

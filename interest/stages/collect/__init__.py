"""Collect Flickr favourites into a collection, or import the published FlickrUser CSVs.

``collect(out, CollectConfig(...))`` runs the resumable, rate-limited crawl;
``plan_crawl`` is its dry run; ``import_flickruser`` maps the published CSVs
into the same contract. See docs/collect.md.
"""

from interest.stages.collect.config import CollectConfig
from interest.stages.collect.crawl import collect
from interest.stages.collect.summary import format_summary
from interest.stages.collect.importer import import_flickruser
from interest.stages.collect.plan import format_plan, plan_crawl

__all__ = ["CollectConfig", "collect", "format_summary", "import_flickruser", "plan_crawl", "format_plan"]

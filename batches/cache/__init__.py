"""Everything batchweb keeps in a cache, in one place. The rule:

    A cached answer is kept under the cache generations it was drawn from, and is never
    deleted: a committed write to what it shows raises a generation, and the old copy is never
    asked for again. Nothing else invalidates anything.

- generations.py: the numbers (everyone's, and one per connection) and the one rule of which
  write raises which (`SHOWN`, `scope_of`), after the write commits; `migrate` raises
  everyone's.
- pages.py: whole pages and their bodies (the list, a batch's page, the live fragments), keyed
  by the generations of the connections they show, the person, the path and the templates.
- rows.py: the list's rows, keyed by what each shows of its batch.
- keys.py: every other key (a session's account, permissions, what a person may see, two small
  lookups) and the aliases: "people" stays in each process whatever CACHE_URL says (an
  account holds its password hash); "pages" and "rows" go where CACHE_URL says (Redis for
  several web processes), under keys naming the code's version (settings.CACHES,
  batchweb/version.py).

Only this package makes cache keys; docs/architecture.md ("The caching rule") tells the story.
The submodules are imported by name (`from batches.cache import pages`): this file imports
none of them, since the models import generations.py while they load.
"""

"""Rivalwatch scrapers: pages in, typed observations out. Never imports `tracker`.

Modules: `types` (the typed results), `fetch` / `browser` (getting pages), `product`, `structured`,
`prices`, `promotions` (product pages), `listing`, `sitemap` (catalogues), `serp`, `seo`, `visibility`
(rankings and on-page SEO), `blocked` (bot walls).
"""

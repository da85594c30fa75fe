"""The report's stylesheet and script, which avbench.report inlines into index.html."""

"""What a found leak is shown with: allocation sites, retention paths, resources, native stacks, flamegraphs, groups."""

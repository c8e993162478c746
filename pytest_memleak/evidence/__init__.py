"""What a found leak is shown with (gathered by ``gather``): allocation sites, retention paths, resources, native stacks, flamegraphs, groups."""

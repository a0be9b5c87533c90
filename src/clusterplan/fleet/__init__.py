"""Fleet planning: from a capex plan per quarter and a hardware mix to capacity over time."""

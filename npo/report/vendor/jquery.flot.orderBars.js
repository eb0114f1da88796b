/*
 * jquery.flot.orderBars.js -- MINIMAL REPLACEMENT written for npo-bench.
 *
 * This is NOT the upstream flot-orderbars plugin (npm "flot-orderbars" 1.0.0,
 * which asv's index.html loads from a CDN). That plugin is packaged neither by
 * Debian nor on PyPI, so this small stand-in implements only what asv's own
 * JavaScript uses: graphdisplay.js gives every series `bars: {order: i}` and,
 * when a benchmark parameter is on the x axis (xaxis.mode "categories"), sets
 * `series.bars = {show: true, barWidth: 0.6 / nseries, align: "center"}`.
 * Without ordering, the bars of the different series would be drawn on top of
 * each other; with it they stand side by side around each category.
 *
 * What it does: for each series with bars shown and a numeric `bars.order`,
 * it shifts that series' bar positions (x, or y for horizontal bars) by
 *     (rank - (n - 1) / 2) * barWidth
 * where n is the number of such series and rank is the series' place among
 * them when sorted by `order`. A single ordered series is not moved.
 * Not implemented (asv does not use them): bar borders in the spacing, series
 * with different bar widths, `bars.align` values other than "center" being
 * treated differently.
 *
 * Copyright (c) npo-bench contributors. Licensed under the MIT license
 * (SPDX-License-Identifier: MIT), like npo-bench itself.
 */
(function ($) {
    "use strict";

    function isOrdered(s) {
        return s.bars && s.bars.show && typeof s.bars.order === "number";
    }

    function init(plot) {
        plot.hooks.processDatapoints.push(function (plot, series, datapoints) {
            if (!isOrdered(series)) {
                return;
            }
            var ordered = $.grep(plot.getData(), isOrdered);
            if (ordered.length < 2) {
                return;
            }
            ordered.sort(function (a, b) { return a.bars.order - b.bars.order; });
            var rank = $.inArray(series, ordered);
            if (rank < 0) {
                return;
            }
            var shift = (rank - (ordered.length - 1) / 2) * series.bars.barWidth;
            var axis = series.bars.horizontal ? 1 : 0;
            var points = datapoints.points, ps = datapoints.pointsize;
            for (var i = 0; i < points.length; i += ps) {
                if (points[i + axis] != null) {
                    points[i + axis] += shift;
                }
            }
        });
    }

    $.plot.plugins.push({
        init: init,
        options: { series: { bars: { order: null } } },
        name: "orderBars",
        version: "npo-bench-minimal-1"
    });
})(jQuery);

// ray-logme leaderboard page: sortable tables, cost-axis switch, model search.
// Runs under a hash-based Content-Security-Policy; reads only the page's own DOM.
(function () {
  "use strict";

  function cellKey(row, index, numeric) {
    var cell = row.cells[index];
    if (!cell) {
      return null;
    }
    if (numeric) {
      var raw = cell.getAttribute("data-value");
      if (raw === null || raw === "") {
        return null;
      }
      var number = parseFloat(raw);
      return isNaN(number) ? null : number;
    }
    return cell.textContent.trim().toLowerCase();
  }

  function sortTable(table, header, index) {
    var numeric = header.getAttribute("data-sort") === "num";
    var current = header.getAttribute("aria-sort");
    var ascending;
    if (current === "ascending") {
      ascending = false;
    } else if (current === "descending") {
      ascending = true;
    } else {
      ascending = header.getAttribute("data-order") !== "desc";
    }
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var keyed = rows.map(function (row, position) {
      return { row: row, key: cellKey(row, index, numeric), position: position };
    });
    keyed.sort(function (a, b) {
      // Missing values go last whatever the direction; equal keys keep their order.
      if (a.key === null || b.key === null) {
        if (a.key === b.key) {
          return a.position - b.position;
        }
        return a.key === null ? 1 : -1;
      }
      var order = 0;
      if (a.key < b.key) {
        order = -1;
      } else if (a.key > b.key) {
        order = 1;
      }
      if (!ascending) {
        order = -order;
      }
      return order !== 0 ? order : a.position - b.position;
    });
    keyed.forEach(function (item) {
      body.appendChild(item.row);
    });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (other) {
      other.removeAttribute("aria-sort");
    });
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }

  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header, index) {
      var button = header.querySelector("button");
      if (button) {
        button.addEventListener("click", function () {
          sortTable(table, header, index);
        });
      }
    });
  });

  var axisButtons = document.querySelectorAll(".axis-buttons button");
  Array.prototype.forEach.call(axisButtons, function (button) {
    button.addEventListener("click", function () {
      var axis = button.getAttribute("data-axis");
      Array.prototype.forEach.call(document.querySelectorAll("figure.plot-figure"), function (figure) {
        figure.hidden = figure.getAttribute("data-axis") !== axis;
      });
      Array.prototype.forEach.call(axisButtons, function (other) {
        other.setAttribute("aria-pressed", other === button ? "true" : "false");
      });
    });
  });

  // One overall table, or one per modality (#overall-table-image, #overall-table-text, ...).
  var search = document.getElementById("model-search");
  var overallTables = document.querySelectorAll('table[id^="overall-table"]');
  if (search && overallTables.length) {
    search.addEventListener("input", function () {
      var needle = search.value.trim().toLowerCase();
      Array.prototype.forEach.call(overallTables, function (table) {
        Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
          var haystack = row.cells[2] ? row.cells[2].textContent.toLowerCase() : "";
          row.hidden = needle !== "" && haystack.indexOf(needle) === -1;
        });
      });
    });
  }

  // The embedded data must parse: a page whose JSON block was cut short should fail loudly.
  var data = JSON.parse(document.getElementById("leaderboard-data").textContent);
  document.body.setAttribute("data-models", String(data.overall.length));
  document.body.setAttribute("data-ready", "true");
})();

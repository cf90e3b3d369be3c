/**
 * Errand's testing helpers (`import ... from 'errand/testing'`). A placeholder, so that the package's
 * `errand/testing` entry point exists while the helpers are written (issue 11, part 5).
 */
export {};

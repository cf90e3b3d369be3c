/** The oldest Node.js the package runs on (package.json `engines`), "major.minor". */
export declare const MIN_NODE: string;
/** Exits with code 1 and one line saying what to run instead when `version` (default: this process's) is too old. */
export declare function requireNode(what: string, version?: string): void;

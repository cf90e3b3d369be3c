/** The oldest Node.js major version the sources run on (package.json `engines`). */
export declare const MIN_NODE_MAJOR: number;
/** Exits with code 1 and one line saying what to run instead when `version` (default: this process's) is too old. */
export declare function requireNode(what: string, version?: string): void;
